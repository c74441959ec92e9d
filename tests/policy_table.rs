//! The 2022 policy, table-driven: every row of both time-limit tables and every threshold edge.
#![cfg(feature = "simulators")]

use std::str::FromStr;

use gateway::policy::{Applicant, CategoryDecision, Inputs, PolicySet, StagesDecision, Table, decide};
use rust_decimal::Decimal;

fn dec(s: &str) -> Option<Decimal> {
    Some(Decimal::from_str(s).unwrap())
}

/// A standard factory that is low-risk with external works.
fn base() -> Inputs {
    Inputs {
        applicant: Some(Applicant::Project),
        building_use: Some("0201".into()),
        nature: Some("1".into()),
        floor_area_m2: dec("8650.50"),
        height_m: dec("18.6"),
        hazardous_goods: Some(false),
        diameter_dn: Some(40),
        external_pipe_m: dec("120"),
        district: "530112".into(),
        table: Some(Table::B),
    }
}

fn category(i: &Inputs) -> CategoryDecision {
    let set = PolicySet::load(None).unwrap();
    decide(set.versions().last().unwrap(), i, "PE-test", None)
        .0
        .category
}

fn decided(i: &Inputs) -> String {
    match category(i) {
        CategoryDecision::Decided { id, .. } => id,
        other => panic!("not decided: {other:?}"),
    }
}

#[test]
fn threshold_edges() {
    type Edit = fn(&mut Inputs);
    let cases: &[(&str, Edit, &str)] = &[
        ("the base case", |_| {}, "low_risk"),
        (
            "10,000 m² is still low-risk",
            |i| i.floor_area_m2 = dec("10000"),
            "low_risk",
        ),
        (
            "10,000.01 m² is not",
            |i| i.floor_area_m2 = dec("10000.01"),
            "other_non_residential",
        ),
        ("24 m is still low-risk", |i| i.height_m = dec("24"), "low_risk"),
        (
            "24.1 m is not",
            |i| i.height_m = dec("24.1"),
            "other_non_residential",
        ),
        ("DN40 is low-risk", |i| i.diameter_dn = Some(40), "low_risk"),
        ("DN50 is general", |i| i.diameter_dn = Some(50), "general"),
        ("DN200 is general", |i| i.diameter_dn = Some(200), "general"),
        (
            "DN250 is other non-residential",
            |i| i.diameter_dn = Some(250),
            "other_non_residential",
        ),
        (
            "200 m of pipe is low-risk",
            |i| i.external_pipe_m = dec("200"),
            "low_risk",
        ),
        (
            "201 m is not",
            |i| i.external_pipe_m = dec("201"),
            "other_non_residential",
        ),
        (
            "201 m at DN100 is not general either",
            |i| {
                i.external_pipe_m = dec("201");
                i.diameter_dn = Some(100)
            },
            "other_non_residential",
        ),
        (
            "hazardous goods",
            |i| i.hazardous_goods = Some(true),
            "other_non_residential",
        ),
        (
            "residential",
            |i| i.building_use = Some("0101".into()),
            "other_residential",
        ),
        (
            "residential with a small connection",
            |i| {
                i.building_use = Some("0101".into());
                i.diameter_dn = Some(20)
            },
            "other_residential",
        ),
        (
            "an ordinary warehouse",
            |i| i.building_use = Some("0202".into()),
            "low_risk",
        ),
        ("an extension", |i| i.nature = Some("3".into()), "low_risk"),
        (
            "a commercial building",
            |i| i.building_use = Some("0301".into()),
            "other_non_residential",
        ),
        (
            "an office at DN100",
            |i| {
                i.building_use = Some("0401".into());
                i.diameter_dn = Some(100)
            },
            "other_non_residential",
        ),
        // Figures that do not decide here: a big residential estate is residential whatever
        // its pipe length.
        (
            "residential, pipe not surveyed",
            |i| {
                i.building_use = Some("0101".into());
                i.external_pipe_m = None
            },
            "other_residential",
        ),
        (
            "too large, diameter unknown",
            |i| {
                i.floor_area_m2 = dec("12500");
                i.diameter_dn = None
            },
            "other_non_residential",
        ),
    ];
    for (name, edit, want) in cases {
        let mut i = base();
        edit(&mut i);
        assert_eq!(decided(&i), *want, "{name}");
    }
}

#[test]
fn unknown_figures_make_the_category_provisional() {
    let mut i = base();
    i.external_pipe_m = None;
    let CategoryDecision::Provisional { missing, outcomes } = category(&i) else {
        panic!()
    };
    assert_eq!(missing, ["water.external_pipe_m"]);
    let find = |cat: &str| {
        outcomes
            .iter()
            .find(|o| o.category.as_deref() == Some(cat))
            .unwrap()
            .when
            .clone()
    };
    assert_eq!(find("low_risk"), ["water.external_pipe_m ≤ 200 m"]);
    assert_eq!(find("other_non_residential"), ["water.external_pipe_m > 200 m"]);

    // No floor area and no water request yet (before 工程建设许可).
    let mut i = base();
    i.floor_area_m2 = None;
    i.diameter_dn = None;
    i.external_pipe_m = None;
    let CategoryDecision::Provisional { missing, outcomes } = category(&i) else {
        panic!()
    };
    assert_eq!(
        missing,
        [
            "building.floor_area_m2",
            "water.diameter_dn",
            "water.external_pipe_m"
        ]
    );
    let low: Vec<_> = outcomes
        .iter()
        .filter(|o| o.category.as_deref() == Some("low_risk"))
        .collect();
    assert_eq!(low.len(), 1, "{outcomes:?}");
    assert_eq!(
        low[0].when,
        [
            "building.floor_area_m2 ≤ 10000 m²",
            "water.diameter_dn ≤ DN40",
            "water.external_pipe_m ≤ 200 m"
        ]
    );
    assert!(outcomes.iter().any(|o| o.category.as_deref() == Some("general")));
}

/// (table, category-setting edit, pipe, survey days, connection days, total) for every row.
#[test]
fn every_row_of_both_tables() {
    type Edit = fn(&mut Inputs);
    let low: Edit = |_| {};
    let general: Edit = |i| i.diameter_dn = Some(100);
    let other: Edit = |i| i.building_use = Some("0301".into());
    /// table, category, the edit that gives it, pipe length, survey, connection, total.
    type Row = (Table, &'static str, Edit, &'static str, Option<u32>, u32, u32);
    let rows: &[Row] = &[
        (Table::A, "low_risk", low, "0", Some(1), 1, 2),
        (Table::A, "low_risk", low, "35", Some(2), 3, 5),
        (Table::A, "general", general, "0", Some(2), 2, 4),
        (Table::A, "general", general, "35", Some(3), 5, 8),
        (Table::A, "other_non_residential", other, "0", Some(2), 2, 4),
        (Table::A, "other_non_residential", other, "35", Some(3), 5, 8),
        (Table::B, "low_risk", low, "0", None, 1, 1),
        (Table::B, "low_risk", low, "35", None, 2, 2),
        (Table::B, "general", general, "0", None, 2, 2),
        (Table::B, "general", general, "35", None, 5, 5),
        (Table::B, "other_non_residential", other, "0", Some(2), 2, 4),
        (Table::B, "other_non_residential", other, "35", Some(3), 5, 8),
    ];
    let set = PolicySet::load(None).unwrap();
    let policy = set.versions().last().unwrap();
    for (table, cat, edit, pipe, survey, connection, total) in rows {
        let mut i = base();
        edit(&mut i);
        i.table = Some(*table);
        i.external_pipe_m = dec(pipe);
        let (d, _) = decide(policy, &i, "PE-test", None);
        assert_eq!(d.category.decided(), Some(*cat));
        let StagesDecision::Limits {
            stages,
            total_working_days,
            untimed_survey,
        } = &d.stages
        else {
            panic!("{table:?} {cat} {pipe}: {:?}", d.stages)
        };
        let got_survey = stages
            .iter()
            .find(|s| s.stage == "site_survey")
            .map(|s| s.working_days);
        let got_connection = stages
            .iter()
            .find(|s| s.stage == "connection")
            .map(|s| s.working_days);
        assert_eq!(
            (got_survey, got_connection, *total_working_days),
            (*survey, Some(*connection), *total),
            "{table:?} {cat} pipe {pipe}"
        );
        assert_eq!(*untimed_survey, survey.is_none());
        // "11000": low-risk, table B, no external works, and nothing else.
        assert_eq!(
            d.mode_11000.known(),
            Some(*table == Table::B && *cat == "low_risk" && *pipe == "0"),
            "{table:?} {cat} {pipe}"
        );
    }
    // Residential: standard terms in both tables.
    for table in [Table::A, Table::B] {
        let mut i = base();
        i.building_use = Some("0101".into());
        i.table = Some(table);
        assert_eq!(
            decide(policy, &i, "PE-test", None).0.stages,
            StagesDecision::StandardTerms
        );
    }
    // Households: small residential for DN15–DN20, 1 + 1 days in both tables.
    for (table, dn) in [(Table::A, 15), (Table::B, 20)] {
        let i = Inputs {
            applicant: Some(Applicant::Household),
            diameter_dn: Some(dn),
            external_pipe_m: dec("0"),
            table: Some(table),
            district: "530102".into(),
            ..Inputs::default()
        };
        let (d, _) = decide(policy, &i, "PE-household", None);
        assert_eq!(d.category.decided(), Some("small_residential"));
        assert!(matches!(
            d.stages,
            StagesDecision::Limits {
                total_working_days: 2,
                ..
            }
        ));
    }
    let household = Inputs {
        applicant: Some(Applicant::Household),
        diameter_dn: Some(25),
        ..Inputs::default()
    };
    assert!(matches!(
        decide(policy, &household, "x", None).0.category,
        CategoryDecision::None { .. }
    ));
}

#[test]
fn fees_and_managers() {
    let set = PolicySet::load(None).unwrap();
    let policy = set.versions().last().unwrap();
    let fee = |dn: Option<i64>, pipe: &str| {
        let mut i = base();
        i.diameter_dn = dn;
        i.external_pipe_m = if pipe.is_empty() { None } else { dec(pipe) };
        decide(policy, &i, "PE-test", None).0.fee.free
    };
    assert_eq!(fee(Some(40), "200"), Some(true));
    assert_eq!(fee(Some(50), "200"), Some(false));
    assert_eq!(fee(Some(40), "201"), Some(false));
    assert_eq!(fee(Some(40), ""), None);
    assert_eq!(
        fee(Some(50), ""),
        Some(false),
        "above DN40 is charged whatever the pipe"
    );

    let (d, traces) = decide(policy, &base(), "PE-a", None);
    let m = d.customer_manager.clone().unwrap();
    assert_eq!(
        m.company, "tongyong",
        "西山区 is served by 通用水务 in the default table"
    );
    assert_eq!(
        decide(policy, &base(), "PE-a", None).0.customer_manager,
        Some(m.clone()),
        "stable"
    );
    // A manager already assigned stays, whatever the roster says.
    let kept = gateway::policy::ManagerDecision {
        manager: "someone else".into(),
        ..m
    };
    assert_eq!(
        decide(policy, &base(), "PE-a", Some(kept.clone()))
            .0
            .customer_manager,
        Some(kept)
    );
    let t = &traces["decisions.category"];
    assert_eq!(t.policy_version, "2022");
    assert_eq!(t.inputs["building.floor_area_m2"], "8650.50");
    assert!(t.rule.contains("policy/2022.toml:"), "{}", t.rule);
}

#[test]
fn the_version_in_force_by_date() {
    let set = PolicySet::load(None).unwrap();
    let d = |s: &str| chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap();
    assert_eq!(set.for_date(d("2022-04-30")).unwrap().version, "2022");
    assert!(set.for_date(d("2022-04-29")).is_err());
}

#[test]
fn a_newer_version_applies_to_records_created_after_it_takes_effect() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("policy")).unwrap();
    let next = include_str!("../mappings/policy/2022.toml")
        .replace("version = \"2022\"", "version = \"2026\"")
        .replace("effective = \"2022-04-30\"", "effective = \"2026-03-01\"")
        .replacen(
            "max_external_pipe_m = \"200\"",
            "max_external_pipe_m = \"300\"",
            1,
        );
    std::fs::write(dir.path().join("policy/2026.toml"), next).unwrap();
    let set = PolicySet::load(Some(dir.path())).unwrap();
    let d = |s: &str| chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap();
    let old = set.for_date(d("2026-02-28")).unwrap();
    let new = set.for_date(d("2026-03-01")).unwrap();
    assert_eq!((old.version.as_str(), new.version.as_str()), ("2022", "2026"));
    let mut i = base();
    i.external_pipe_m = dec("250");
    assert_eq!(
        decide(old, &i, "PE-x", None).0.category.decided(),
        Some("other_non_residential")
    );
    let (decided_new, traces) = decide(new, &i, "PE-x", None);
    assert_eq!(decided_new.category.decided(), Some("low_risk"));
    assert_eq!(decided_new.policy_version, "2026");
    assert_eq!(traces["decisions.category"].policy_file, "policy/2026.toml");
}

#[test]
fn yes_or_no_decisions_that_wait_for_a_figure_say_unknown() {
    use gateway::policy::Answer;
    let set = PolicySet::load(None).unwrap();
    let policy = set.versions().last().unwrap();
    // Low risk or not depends on the external pipe, unknown yet: the "11000" mode is unknown,
    // with the figure it waits for and the answer under each outcome.
    let mut i = base();
    i.table = Some(Table::B);
    i.external_pipe_m = None;
    let d = decide(policy, &i, "PE-test", None).0;
    let Answer::Unknown { waits_for, outcomes } = &d.mode_11000 else {
        panic!("{:?}", d.mode_11000)
    };
    assert!(
        waits_for.contains(&"water.external_pipe_m".to_string()),
        "{waits_for:?}"
    );
    assert!(outcomes.iter().any(|o| o.value), "{outcomes:?}");
    assert!(outcomes.iter().any(|o| !o.value), "{outcomes:?}");
    let yes = outcomes.iter().find(|o| o.value).unwrap();
    assert!(
        yes.when.contains(&"water.external_pipe_m = 0".to_string()),
        "{yes:?}"
    );
    // Low risk and general are both promised zero materials, other non-residential is not.
    let Answer::Unknown { outcomes, .. } = &d.zero_materials_promised else {
        panic!("{:?}", d.zero_materials_promised)
    };
    assert!(outcomes.iter().any(|o| o.value) && outcomes.iter().any(|o| !o.value));
    // In JSON, never a bare `false` for "not known".
    let json = serde_json::to_value(&d).unwrap();
    assert_eq!(json["mode_11000"]["state"], "unknown");
    // Once the figure is known the answer is, too.
    i.external_pipe_m = dec("0");
    let d = decide(policy, &i, "PE-test", None).0;
    assert_eq!(d.mode_11000, Answer::Known { value: true });
    assert_eq!(d.zero_materials_promised, Answer::Known { value: true });
    // A decided category that is not the mode's: known no, whatever the pipe.
    let mut i = base();
    i.building_use = Some("0101".into());
    i.external_pipe_m = None;
    let d = decide(policy, &i, "PE-test", None).0;
    assert_eq!(d.mode_11000, Answer::Known { value: false }, "{:?}", d.category);
}
