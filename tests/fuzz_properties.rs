//! The fuzz targets of `gateway::fuzz_targets`, run as property tests on stable: arbitrary input
//! and mutations of real documents (fixtures, the embedded data files) must never panic. The
//! same targets run under cargo-fuzz on nightly (`fuzz/`).

use gateway::fuzz_targets as t;
use proptest::prelude::*;

/// A seed with some bytes replaced, some cut, some inserted.
fn mutated(seed: &'static [u8]) -> impl Strategy<Value = Vec<u8>> {
    (
        prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..8),
        any::<prop::sample::Index>(),
        prop::collection::vec(any::<u8>(), 0..16),
        any::<prop::sample::Index>(),
    )
        .prop_map(move |(flips, cut, insert, at)| {
            let mut b = seed.to_vec();
            for (i, v) in flips {
                if !b.is_empty() {
                    let i = i.index(b.len());
                    b[i] = v;
                }
            }
            let at = at.index(b.len() + 1);
            b.splice(at..at, insert);
            let cut = cut.index(b.len() + 1);
            if cut > b.len() / 2 {
                b.truncate(cut);
            }
            b
        })
}

fn json_value() -> impl Strategy<Value = serde_json::Value> {
    use serde_json::Value;
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        "\\PC{0,24}".prop_map(Value::from),
        "(DN|Φ)?[0-9]{0,4}(\\.[0-9]{0,3})?".prop_map(Value::from),
    ];
    leaf.prop_recursive(3, 16, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::from),
            prop::collection::btree_map("[A-Z]{2,6}", inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn text(bytes: Vec<u8>) -> String {
    String::from_utf8_lossy(&bytes).into_owned()
}

const APPROVAL: &[&[u8]] = &[
    include_bytes!("../fixtures/approval/contract-example.json"),
    include_bytes!("../fixtures/approval/malformed-credit-and-area.json"),
    include_bytes!("../fixtures/approval/migrated-bare-diameter.json"),
];
const LICENCES: &[&[u8]] = &[
    include_bytes!("../fixtures/licences/query-gbk-lic-prefix.xml"),
    include_bytes!("../fixtures/licences/query-utf8-default-ns.xml"),
    include_bytes!("../fixtures/licences/fault-token-expired.xml"),
    include_bytes!("../fixtures/licences/dtd-entity-bomb.xml"),
];

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn approval_answers(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        t::approval_answer(&bytes);
    }

    #[test]
    fn approval_answers_near_real_ones(
        doc in (0..APPROVAL.len()).prop_flat_map(|i| mutated(APPROVAL[i])),
        seed in any::<u64>(),
    ) {
        // The fixtures are the detail's data; wrap them as the platform does.
        let body = format!(r#"{{"code":"0000","msg":"成功","requestId":"{seed}","data":{}}}"#, text(doc));
        t::approval_answer(body.as_bytes());
    }

    #[test]
    fn approval_details_with_any_field_values(
        edits in prop::collection::vec((any::<prop::sample::Index>(), json_value()), 1..8),
    ) {
        // Valid JSON, every field the mapping reads given another shape or value.
        let mut doc: serde_json::Value = serde_json::from_slice(APPROVAL[0]).unwrap();
        let keys: Vec<String> = doc.as_object().unwrap().keys().cloned().collect();
        for (i, v) in edits {
            doc[&keys[i.index(keys.len())]] = v;
        }
        let body = serde_json::json!({"code": "0000", "msg": "成功", "data": doc});
        t::approval_answer(body.to_string().as_bytes());
    }

    #[test]
    fn licence_answers(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        t::licence_answer(&bytes);
    }

    #[test]
    fn licence_answers_near_real_ones(doc in mutated(LICENCES[0]), other in mutated(LICENCES[1]), fault in mutated(LICENCES[2]), bomb in mutated(LICENCES[3])) {
        for d in [doc, other, fault, bomb] {
            t::licence_answer(&d);
        }
    }

    #[test]
    fn mapping_files(doc in mutated(include_bytes!("../mappings/approval/project.toml"))) {
        t::mapping_file(&text(doc));
    }

    #[test]
    fn policy_files(doc in mutated(include_bytes!("../mappings/policy/2022.toml"))) {
        t::policy_file(&text(doc));
    }

    #[test]
    fn calendar_files(doc in mutated(include_bytes!("../mappings/calendars/2026.toml"))) {
        t::calendar_file(&text(doc));
    }

    #[test]
    fn configuration_files(doc in mutated(b"[store]\npath = \"x.db\"\n\n[approval]\nbase_url = \"https://approval.example\"\napp_id = \"kmsw\"\nsign_method = \"HMAC-SM3\"\n\n[licences]\nbase_url = \"https://lic.example\"\napp_id = \"l\"\n\n[sync]\nstart = \"2026-10-01 00:00:00\"\nconcurrency = 4\n")) {
        t::config_file(&text(doc));
    }

    #[test]
    fn text_files_of_any_shape(s in "\\PC{0,300}") {
        t::mapping_file(&s);
        t::policy_file(&s);
        t::calendar_file(&s);
        t::config_file(&s);
    }
}
