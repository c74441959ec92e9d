//! Fixture projects of real shape, from `fixtures/approval/`, served beside generated ones.

use chrono::{DateTime, Duration, Utc};
use serde_json::Value;
use shuiwu_wire::format_beijing;

/// `(name, JSON)` of every fixture project.
pub const FIXTURES: &[(&str, &str)] = &[
    (
        "contract-example",
        include_str!("../../../../fixtures/approval/contract-example.json"),
    ),
    (
        "residential-unsurveyed",
        include_str!("../../../../fixtures/approval/residential-unsurveyed.json"),
    ),
    (
        "migrated-bare-diameter",
        include_str!("../../../../fixtures/approval/migrated-bare-diameter.json"),
    ),
    (
        "sited-outside-kunming",
        include_str!("../../../../fixtures/approval/sited-outside-kunming.json"),
    ),
    (
        "withdrawn",
        include_str!("../../../../fixtures/approval/withdrawn.json"),
    ),
    (
        "malformed-credit-and-area",
        include_str!("../../../../fixtures/approval/malformed-credit-and-area.json"),
    ),
];

/// The fixture projects with `GXSJ` moved to `at` (plus one second each), so that they fall
/// inside whatever window a test or the demo syncs.
pub fn fixtures_at(at: DateTime<Utc>) -> Result<Vec<Value>, String> {
    FIXTURES
        .iter()
        .enumerate()
        .map(|(i, (name, text))| {
            let mut doc: Value = serde_json::from_str(text).map_err(|e| format!("fixture {name}: {e}"))?;
            doc["GXSJ"] = Value::from(format_beijing(at + Duration::seconds(i as i64)));
            Ok(doc)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn fixtures_parse() {
        let docs = super::fixtures_at(chrono::Utc::now()).unwrap();
        assert_eq!(docs.len(), super::FIXTURES.len());
        assert!(docs.iter().all(|d| d["XMDM"].is_string() && d["BBH"].is_u64()));
    }
}
